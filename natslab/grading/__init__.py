"""Checks and labs: the check framework, one checker module per course module, lab generation."""
