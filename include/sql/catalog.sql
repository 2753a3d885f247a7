-- Package catalog per customer, read by the kombo_package_sync DAG on the warehouse connection
-- (kombo_warehouse). Edit freely; keep the column contract (docs/catalog.md):
--
--   customer_key  text     the customer's id = Kombo end_user.origin_id of its integrations
--   package_id    text     your package id (unique per customer)
--   type          text     BEHAVIORAL | VIDEO_INTERVIEW | SKILLS_TEST | BACKGROUND_CHECK | REFERENCE_CHECK
--   name          text     non-empty, shown in the ATS
--   description   text     non-empty, shown by some ATSs
--   active        boolean  false = not offered (removed from the customer's list)
--
-- One row per (customer, package). A customer with no rows gets no packages. The LEFT JOIN is deliberate:
-- an entitlement to a package missing from catalog_packages comes back with empty columns, so it is
-- reported and quarantined (and the customer held back) instead of silently vanishing from its list.
SELECT
    e.customer_key,
    e.package_id,
    p.type,
    p.name,
    p.description,
    p.active
FROM catalog_entitlements AS e
LEFT JOIN catalog_packages AS p ON p.package_id = e.package_id
ORDER BY e.customer_key, e.package_id
