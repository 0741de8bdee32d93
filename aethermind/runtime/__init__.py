"""The process and the disk underneath every stage: devices, seeding, DDP, run locks."""
