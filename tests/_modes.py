"""The `mode` fixture: run a behaviour through the sync and the async driver alike."""
