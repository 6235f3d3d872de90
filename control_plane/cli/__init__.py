"""``sovctl``: the admin CLI for platform teams, admins and auditors."""
