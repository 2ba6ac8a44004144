"""The HTTP API's client: what `llmos` commands use to talk to a kernel.

`base.BaseClient` holds the verbs, errors and event parsing on the standard
library; `api.Client` speaks to a server by URL (a remote `llmos serve`, on
httpx) and `unix.UnixClient` to one on a Unix socket (the local kernel
service, or the app run in-process, on `http.client`); `local` finds, starts,
checks and stops the local kernel service. None imports the kernel, the
provider SDKs or numpy, and a local command does not import httpx either.
"""
