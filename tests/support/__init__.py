"""Test support: synthetic workspaces with planted structure and fixture artifacts.

Used by the tests and the benchmarks, never by ``medsae`` itself (the import-graph test
checks that no module of ``src`` imports it).
"""
