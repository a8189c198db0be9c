"""Analysis: costs, hardware profiles, roofline, timing and report rendering (never imports a pass)."""
