"""Reports: the comparison table, headline metrics files and figures."""
