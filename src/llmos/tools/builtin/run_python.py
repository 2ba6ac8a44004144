"""`run_python`: run a piece of Python in the tool sandbox; its output and errors come back.

The code runs as one call of the runner below, through the same sandbox and
limits as a user tool (`tools/sandbox`: no network, writes only in a scratch
directory, no processes, CPU/memory/time caps). The runner captures what the
code prints; an exception comes back as a failed call with its last line and
the line number in the code, so the model can fix it.

Left out: state between calls (every call is a fresh interpreter) and
packages beyond what the kernel's Python has.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from llmos.tools import sandbox
from llmos.tools.builtin.base import Builtin, Env, done, failed

MAX_CODE = 20_000
MAX_OUTPUT = 6000  # characters of stdout and of stderr each the model gets back

RUNNER = f'''
import contextlib, io, traceback


def run(code: str) -> dict:
    """Run code; return its output and error."""
    out, err = io.StringIO(), io.StringIO()
    error = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            exec(compile(code, "<code>", "exec"), {{"__name__": "__main__"}})
        except SystemExit as e:
            if e.code not in (None, 0):
                error = f"SystemExit: {{e.code}}"
        except BaseException as e:
            lines = [f.lineno for f in traceback.extract_tb(e.__traceback__)
                     if f.filename == "<code>"]
            where = f" (line {{lines[-1]}})" if lines else ""
            error = "".join(traceback.format_exception_only(type(e), e)).strip() + where
    def cut(text):
        n = len(text) - {MAX_OUTPUT}
        return text if n <= 0 else text[:{MAX_OUTPUT}] + f"\\n[... {{n}} more characters]"
    return {{"stdout": cut(out.getvalue()), "stderr": cut(err.getvalue()), "error": error}}
'''


class RunPythonArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(max_length=MAX_CODE, description="Python source; print() what you need")


def _text(out: dict[str, str | None]) -> str:
    parts = []
    if out.get("stdout"):
        parts.append(f"stdout:\n{out['stdout']}")
    if out.get("stderr"):
        parts.append(f"stderr:\n{out['stderr']}")
    if out.get("error"):
        parts.append(f"error: {out['error']}")
    return "\n".join(parts) or "(no output; use print() to see values)"


async def run(args: RunPythonArgs, env: Env) -> sandbox.SandboxResult:
    try:
        backend = sandbox.select(env.allow_unsafe)
    except sandbox.SandboxUnavailable as e:
        return failed(str(e))
    request = {"mode": "call", "source": RUNNER, "function": "run", "args": {"code": args.code}}
    ran = await sandbox.arun(request, env.limits, backend)
    if not ran.ok:  # the sandbox itself stopped it: time, memory, a crash
        return ran
    out = ran.result if isinstance(ran.result, dict) else {"stdout": str(ran.result)}
    return failed(_text(out)) if out.get("error") else done(_text(out))


TOOL = Builtin(
    "run_python",
    "Run Python code in a sandbox (no network, no files kept, a few seconds) and get back "
    "what it prints and any error. Each call starts fresh.",
    RunPythonArgs,
    run,
)
