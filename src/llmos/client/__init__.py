"""The HTTP API's client: what `llmos` commands use to talk to a kernel.

`api.Client` speaks to any llmos server (a remote `llmos serve`, the local
kernel service on its Unix socket, or an in-process server); `local` finds,
starts, checks and stops the local kernel service. Both import only httpx and
the standard library, so a client command never pays for the kernel, the
provider SDKs or numpy.
"""
