"""The physics shipped with simkit, each solver found by name through the ``simkit.solvers``
entry-point group."""
