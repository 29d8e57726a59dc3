"""The base: general helpers every layer may import (embedded SQLite stores, table files, the
generated blocks of the Markdown docs). It imports no layer of the package."""
