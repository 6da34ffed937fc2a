"""Attribution with captum, mapped through the token map (scratch export; rewritten below)."""
