-- Demo warehouse tables behind include/sql/catalog.sql (portable: SQLite and PostgreSQL).
-- Your warehouse will have its own tables; only the columns catalog.sql returns are a contract.

-- One row per package you sell through Kombo. `type` is one of Kombo's five package types:
-- BEHAVIORAL, VIDEO_INTERVIEW, SKILLS_TEST, BACKGROUND_CHECK, REFERENCE_CHECK (checked by the pipeline,
-- not by a constraint, so a bad value is reported and quarantined instead of failing the load).
CREATE TABLE IF NOT EXISTS catalog_packages (
    package_id  VARCHAR(255) PRIMARY KEY,
    type        VARCHAR(32)  NOT NULL,
    name        VARCHAR(255) NOT NULL,
    description TEXT         NOT NULL,
    active      BOOLEAN      NOT NULL DEFAULT TRUE
);

-- Which customer may order which package. customer_key is the id you pass to Kombo Connect as
-- end_user_origin_id (Kombo's end_user.origin_id). A customer without rows here is offered nothing.
CREATE TABLE IF NOT EXISTS catalog_entitlements (
    customer_key VARCHAR(255) NOT NULL,
    package_id   VARCHAR(255) NOT NULL,
    PRIMARY KEY (customer_key, package_id)
);
