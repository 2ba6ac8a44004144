"""The kernel: the facade `Kernel` and its subsystems (cores, agents, wake, syscalls)."""
