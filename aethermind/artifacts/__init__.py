"""What training leaves on disk and how every command reads it back."""
