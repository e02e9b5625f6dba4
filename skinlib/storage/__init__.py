"""The plumbing of files on disk: atomic writes, the folders the kit may write to, checkpoints, run folders and the prepared-image cache."""
