"""Small pieces every layer uses: user errors, content hashes, atomic file writes, progress reporting.
Nothing here imports another part of the pipeline."""
