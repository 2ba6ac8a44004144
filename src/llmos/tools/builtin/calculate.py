"""`calculate`: arithmetic and common math functions, evaluated without running code.

The expression is parsed with `ast` and walked over a whitelisted grammar:
numbers, `+ - * / // % **`, unary signs, parentheses, the constants `pi`, `e`,
`tau`, and calls of the functions in `FUNCTIONS` by name. Anything else
(names, attributes, subscripts, strings, lambdas, comprehensions) is refused
before anything is evaluated. Integers stay exact up to `MAX_BITS`; a power
or product that would pass it is refused before it is computed, so
`9**9**9` answers at once instead of eating the CPU.

Left out: variables, comparisons and complex numbers.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from llmos.errors import InvalidRequest
from llmos.tools.builtin.base import Builtin, Env, done, failed
from llmos.tools.sandbox import SandboxResult

MAX_CHARS = 1000
MAX_BITS = 4096  # about 1233 decimal digits
MAX_FACTORIAL = 1000

Number = int | float


class CalcError(InvalidRequest):
    """The expression is not allowed or cannot be evaluated; the message says why."""


def _factorial(n: Number) -> int:
    if isinstance(n, float) and not n.is_integer():
        raise CalcError("factorial() needs a whole number")
    if not 0 <= n <= MAX_FACTORIAL:
        raise CalcError(f"factorial() takes 0..{MAX_FACTORIAL}")
    return math.factorial(int(n))


def _log(x: Number, base: Number = math.e) -> float:
    return math.log(x, base)


FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "cbrt": math.cbrt,
    "exp": math.exp,
    "log": _log,
    "ln": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "degrees": math.degrees,
    "radians": math.radians,
    "hypot": math.hypot,
    "floor": math.floor,
    "ceil": math.ceil,
    "trunc": math.trunc,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "gcd": math.gcd,
    "lcm": math.lcm,
    "factorial": _factorial,
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _bits(x: Number) -> float:
    """Bits of magnitude of x (a float's exponent, an int's length)."""
    if isinstance(x, int):
        return x.bit_length()
    return math.log2(abs(x)) if x and math.isfinite(x) else 0.0


def _power(a: Number, b: Number) -> Number:
    if isinstance(a, int) and isinstance(b, int) and b >= 0:
        if abs(a) > 1 and b * math.log2(abs(a)) > MAX_BITS:
            raise CalcError(f"result too large (over {MAX_BITS} bits)")
        return a**b
    if a < 0 and not float(b).is_integer():
        raise CalcError("a negative number to a fractional power has no real result")
    return math.pow(a, b)


def _multiply(a: Number, b: Number) -> Number:
    if isinstance(a, int) and isinstance(b, int) and _bits(a) + _bits(b) > MAX_BITS + 1:
        raise CalcError(f"result too large (over {MAX_BITS} bits)")
    return a * b


BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _multiply,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}
UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalcError(f"only numbers are allowed, not {node.value!r}")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        return BINARY[type(node.op)](_eval(node.left), _eval(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise CalcError(f"unknown name {node.id!r}; constants: {', '.join(CONSTANTS)}")
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS or node.keywords:
            shown = name or ast.unparse(node.func)
            raise CalcError(
                f"{shown!r} is not an allowed function; allowed: {', '.join(FUNCTIONS)}"
            )
        args = [_eval(a) for a in node.args]
        if name in ("min", "max") and not args:
            raise CalcError(f"{name}() needs at least one number")
        result = FUNCTIONS[name](*args)
        if isinstance(result, int) and _bits(result) > MAX_BITS:
            raise CalcError(f"result too large (over {MAX_BITS} bits)")
        return result
    raise CalcError(f"not allowed in an expression: {type(node).__name__}")


def evaluate(expression: str) -> Number:
    """The value of an arithmetic expression; raises CalcError (refused or failed)."""
    if len(expression) > MAX_CHARS:
        raise CalcError(f"expression longer than {MAX_CHARS} characters")
    text = expression.strip().replace("^", "**")  # people write 2^10
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise CalcError(f"not an expression: {e.msg}") from None
    try:
        value = _eval(tree)
    except CalcError:
        raise
    except ZeroDivisionError:
        raise CalcError("division by zero") from None
    except (OverflowError, MemoryError):
        raise CalcError("result too large") from None
    except RecursionError:
        raise CalcError("expression nested too deeply") from None
    except (ValueError, TypeError) as e:
        raise CalcError(f"math error: {e}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise CalcError("result is not a finite number")
    return value


class CalculateArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expression: str = Field(
        max_length=MAX_CHARS,
        description="e.g. 2*(3+4)**2, sqrt(2)/3, log(1000, 10), factorial(20)",
    )


async def run(args: CalculateArgs, env: Env) -> SandboxResult:
    try:
        value = evaluate(args.expression)
    except CalcError as e:
        return failed(str(e))
    return done(value if isinstance(value, int) else float(f"{value:.15g}"))


TOOL = Builtin(
    "calculate",
    "Evaluate an arithmetic expression: + - * / // % **, math functions (sqrt, log, "
    "sin, factorial, ...), pi, e. No variables or code.",
    CalculateArgs,
    run,
)
