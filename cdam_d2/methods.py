"""The methods of the plugin, one package each (``cdam_d2.<name>``), listed once here.

A method package holds everything of its method and offers two modules by convention:

- ``config`` with ``add_config(cfg)``: its ``MODEL.<METHOD>`` keys (plain yacs, no Detectron2);
- ``meta_arch``: its Detectron2 meta-architecture, registered on import, whose ``recipe``
  (a :class:`cdam_d2.engine.recipe.Recipe`) brings its loaders, solver, hooks, evaluation context
  and predictor.

Adding a method is one new package and one name below.
"""
METHODS = ("cdam", "clustercam")
