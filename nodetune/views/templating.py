"""nodetune's one Jinja environment: templates under nodetune/templates/, strict on undefined.

Templates only lay out data that Python has already computed. The `to_yaml` filter dumps a
computed dict as block YAML in key order, so a template can put comments around objects.
"""

from __future__ import annotations

import functools
from typing import Any

from nodetune.errors import RenderError


def to_yaml(value: Any, indent_sequences: bool = False) -> str:
    """Block YAML in key order, without anchors/aliases for repeated objects.

    `indent_sequences` indents a list under its key (`key:\n  - item`), as yamllint's
    default `indent-sequences` (and so ansible-lint) wants."""
    # deferred: PyYAML costs 16 ms at start-up; a cached check never parses YAML
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

        def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
            super().increase_indent(flow, indentless and not indent_sequences)

    text: str = yaml.dump(value, Dumper=Dumper, sort_keys=False, default_flow_style=False,
                          width=100)
    return text.rstrip("\n")


@functools.cache
def environment() -> Any:
    # deferred: jinja2 costs 43 ms at start-up; only rendering needs it
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    # HTML pages show values read from node reports (host names, fact values, check
    # summaries): escaped there; YAML, shell and conf templates validate their values instead
    env = Environment(loader=PackageLoader("nodetune", "templates"), undefined=StrictUndefined,
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                      autoescape=select_autoescape(enabled_extensions=("html.j2",),
                                                   default_for_string=False, default=False))
    env.filters["to_yaml"] = to_yaml
    return env


def render(name: str, **values: Any) -> str:
    """Render template `name` (relative to nodetune/templates/) with `values`."""
    # deferred: jinja2 costs 43 ms at start-up; only rendering needs it
    from jinja2 import TemplateError

    try:
        return str(environment().get_template(name).render(**values))
    except TemplateError as exc:
        raise RenderError(f"template {name} failed: {exc}",
                          fix="report this as a nodetune bug with the command line used") from exc
