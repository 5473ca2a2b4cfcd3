"""One module per upstream source; each parses its real upstream format into source rows."""
