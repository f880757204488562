"""What every layer of the package uses: name registries (:mod:`.registry`), safe file writes
and reads (:mod:`.io`), argument checks with messages that name the argument (:mod:`.checks`),
the peak memory of a call as torch's allocator counts it (:mod:`.memory`) and the CPU's
denormal-float mode (:mod:`.floats`)."""
