"""Model lifecycle: repository scan, verification of one version directory into a served model (a pure
function that starts no thread), and the registry that publishes immutable snapshots and owns every
batcher's start and stop."""
