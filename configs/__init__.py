"""The suites (``<name>.yaml``) and their committed reference numbers (``<name>_reference.json``).

A package only so that the YAML files ship with ltkd-bench (wheel installs included) and are found through
``importlib.resources``; it holds no code.
"""
