"""pythonia peer of bench/run.ts: the module pythonia imports; Node calls its functions."""


def echo(x):
    return x


def add(a, b):
    return a + b
