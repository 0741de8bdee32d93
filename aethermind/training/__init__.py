"""The training loop and what it needs: run config, optimizer, dashboard, memory plan."""
