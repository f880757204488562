"""What every layer of the package uses: name registries (:mod:`.registry`), safe file writes
and reads (:mod:`.io`) and argument checks with messages that name the argument (:mod:`.checks`)."""
