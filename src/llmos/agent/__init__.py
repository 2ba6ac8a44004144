"""The agent: the step loop, its functions, and the syscall interface it sees of the kernel."""
