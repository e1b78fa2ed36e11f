"""What every stage runs on: the device and precision, torch.distributed, the CPU
allocator, atomic file writes and the user-facing error type."""
