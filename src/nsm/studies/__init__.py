"""What is done with trained networks: the paper's tables (:mod:`.reproduce` trains those
:mod:`.catalog` names, with the run claims of :mod:`.claim` that let several workers share a
sweep; :mod:`.tables` and :mod:`.table_files` write them, :mod:`.compare` reads them), evaluation under shift and
uncertainty (:mod:`.evaluate`, :mod:`.uncertainty`), device non-idealities (:mod:`.devices`),
online learning (:mod:`.online`), and the figures (:mod:`.figures`: those of a recorded
training run, and the plots of the uncertainty and device studies)."""
