"""Preference data and prompt sets.

- :mod:`~congrad.data.formats`: reading and validating rows (docs/data.md, "Preference data"), the load report;
- :mod:`~congrad.data.tokenization`: token ids per pair (TRL's DPO conventions) and padded batches;
- :mod:`~congrad.data.datamodule`: the Lightning data module the filter prunes between epochs;
- :mod:`~congrad.data.prompts`: prompt sets (``prompt``, ``language``) for generation;
- :mod:`~congrad.data.synthetic`: the multilingual sets shipped in ``data/``, generated from the per-language
  text tables ``data/templates/<code>.json``;
- :mod:`~congrad.data.languages`: ISO 639-1 codes.

Import from the modules themselves; this package stays free of heavy imports (Lightning) so that
loading data or building the tiny tokenizer does not pay for them.
"""
