"""Model definitions: one readable file per architecture, plus the named presets that use them."""
