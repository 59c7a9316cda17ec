"""Render what nodetune hands to other tools: thin Ansible playbooks from failing settings.

Templates live in `nodetune/templates/` and go through the one Jinja environment of
`nodetune.views.templating`; this package computes the data they lay out.
"""
