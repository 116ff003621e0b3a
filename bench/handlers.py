"""Handlers of the pyvisor side of bench/run.ts (the bare baseline does the same work)."""

from pyvisor import handler


@handler
def echo(x):
    return x


@handler
def add(a, b):
    return a + b
