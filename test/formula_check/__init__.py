"""
The formula's render check (``make check``): seconds, no root, no test host.

* :mod:`.model` keeps a rendering of the account model for ``pillar.example``
  per Debian release under ``test/data/model/`` (a change of the model shows in
  review as a diff of those files);
* :mod:`.render` renders the whole formula (``webarch``) with Salt's own
  loader, in this process, for each release and variant (full run, a run
  limited by ``webarch_only``, an account switched to absent);
* :mod:`.requisites` checks that every requisite names a state Salt finds;
* :mod:`.runtime` renders each ``file.managed`` source as the state run would
  (templates are rendered only at run time, so ``state.show_sls`` misses them)
  and looks each state function up in Salt's loader.

``python -m formula_check [--update] [--root DIR] [--release N]``.
"""

from formula_check.problems import Problem

__all__ = ["Problem"]
