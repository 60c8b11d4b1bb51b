"""What a hospital runs: thin functions over ``fedmap`` plus the site's own I/O.

The site runtime (data contracts, local training jobs, the S3 exchange) lands here next; until
then the package holds no tasks.
"""
