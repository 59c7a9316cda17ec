"""`nodetune apply` and `rollback`: plan, render Ansible, run it, record state, restore."""
