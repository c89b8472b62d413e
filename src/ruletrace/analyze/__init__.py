"""Analysis over explanations, apart from how it is shown: counts, hit map, path diff.

- ``summary``: packets by fate and by deciding rule, skipped lines, warnings (``Summary``);
- ``hitmap``: per-rule packet counts (matched, reached, never reached) for the report;
- ``diff``: two packets' paths aligned, where they part ways, and ``rule_check``: which match
  option of the rule there matched one packet and not the other.

Works on the model (``model.Explanation``); JSON read back goes through ``render.json.from_json``
first. Imports model, errors, fields and earlier stages only: no renderer, no rich.
"""
