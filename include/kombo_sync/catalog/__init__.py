"""Package catalog sync (job 1): every customer's integrations get exactly the packages it is entitled to.

`job` holds the DAG's steps, `tasks` their Airflow entry points; `source` reads the catalog (SQL or YAML), `contract` checks it, `plan` decides per
integration, `publish` sends. See docs/catalog.md.
"""

from kombo_sync.catalog.contract import PackageDef, ValidatedCatalog, package_list_hash, validate_catalog
from kombo_sync.catalog.job import (
    CatalogSyncFailed,
    finish_catalog_sync,
    load_catalog,
    plan_catalog_sync,
    publish_catalog_shard,
)
from kombo_sync.catalog.plan import SyncOptions
from kombo_sync.catalog.source import CONTRACT_COLUMNS, CatalogSourceError

__all__ = [
    "CONTRACT_COLUMNS",
    "CatalogSourceError",
    "CatalogSyncFailed",
    "PackageDef",
    "SyncOptions",
    "ValidatedCatalog",
    "finish_catalog_sync",
    "load_catalog",
    "package_list_hash",
    "plan_catalog_sync",
    "publish_catalog_shard",
    "validate_catalog",
]
