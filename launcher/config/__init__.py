"""Login side, first: the composed settings as typed specs (compose -> spec -> derive), and the
facts read from the user's inputs (data meta files, generations, tracking settings)."""
