"""Two Linux calls made from inside Numba's worker threads: pin the calling thread to a CPU
set, and ask which CPU it runs on (:mod:`.thread_placement` says why).

A thread can only be pinned from Python by its kernel thread id, which Numba does not tell;
so each worker pins itself, in a parallel loop with one task per thread. The two C functions
are declared to LLVM by name (an ``intrinsic``), the way Numba itself calls libm: the JIT finds
them in the C library Python already loaded, and ``cache=True`` keeps working (a ctypes
function pointer would be a per-process address baked into the code, which Numba does not cache).
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

_INT = ir.IntType(32)


@intrinsic
def _sched_setaffinity_self(typingctx, mask):
    """``sched_setaffinity(0, bytes of mask, mask)``: the calling thread may run only on the CPUs
    whose bits are set in mask (a contiguous uint64 array); returns 0 or -1."""
    if not (isinstance(mask, types.Array) and mask.dtype == types.uint64 and mask.layout == "C"):
        return None

    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        nbytes = builder.mul(arr.nitems, ir.Constant(arr.nitems.type, 8))
        fnty = ir.FunctionType(_INT, [_INT, nbytes.type, ir.IntType(8).as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "sched_setaffinity")
        return builder.call(fn, [ir.Constant(_INT, 0), nbytes, builder.bitcast(arr.data, ir.IntType(8).as_pointer())])

    return types.int32(mask), codegen


@intrinsic
def _sched_getcpu(typingctx):
    """``sched_getcpu()``: the CPU the calling thread runs on now."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_INT, []), "sched_getcpu")
        return builder.call(fn, [])

    return types.int32(), codegen


@njit(parallel=True, cache=True)
def pin_tasks(masks, status):
    """Task w pins the thread that runs it to the CPU set masks[w] (threads, words); its result
    into status[w]. Run with as many Numba threads as tasks: then task w is thread w's."""
    for w in prange(masks.shape[0]):
        status[w] = _sched_setaffinity_self(masks[w])


@njit(parallel=True, cache=True)
def task_cpus(where):
    """The CPU each task of a parallel loop ran on: where[w] for task w."""
    for w in prange(where.shape[0]):
        where[w] = _sched_getcpu()
