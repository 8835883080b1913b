"""The k6 Cloud APIs the harvester speaks: v2 (`/loadtests/v2`) and v6 (`/cloud/v6` runs,
`/cloud/v5` metrics), each behind the same small interface (`base.py`)."""
