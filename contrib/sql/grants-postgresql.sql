-- PostgreSQL roles for lecentral (docs/operator-guide.md, "Database accounts for reporting
-- agents"). Replace the passwords, the role names and, if yours differs, the database name
-- certs. Run as a superuser: psql -d certs -f grants-postgresql.sql
-- (tests/test_agent_grants.py runs this very file, with the names replaced).

-- == the central host (before lecentral init) ==
-- lecentral init/upgrade create the tables in schema public, so this role owns them (all rights
-- on them) and the reporting trigger functions, which run as it (SECURITY DEFINER).
CREATE ROLE lecentral LOGIN PASSWORD 'CHANGE-ME';
GRANT CONNECT ON DATABASE certs TO lecentral;
GRANT USAGE, CREATE ON SCHEMA public TO lecentral;

-- == an agent that does not report (agent.report = false): read-only (after lecentral init) ==
CREATE ROLE reader LOGIN PASSWORD 'CHANGE-ME-TOO';
GRANT CONNECT ON DATABASE certs TO reader;
GRANT USAGE ON SCHEMA public TO reader;
GRANT SELECT ON certs TO reader;

-- == one role per reporting agent (after lecentral init; repeat for each server) ==
-- Then, on the central host, map the role to its host (the triggers refuse any other host):
--   lecentral agent add web1.example.com --db-user agent_web1
-- No DELETE anywhere, no UPDATE of runs or events: a stolen credential cannot erase history,
-- and cannot touch certs beyond reading it. It needs no right on lecentral_agents: the triggers
-- read it as their owner.
CREATE ROLE agent_web1 LOGIN PASSWORD 'CHANGE-ME-AGENT';
GRANT CONNECT ON DATABASE certs TO agent_web1;
GRANT USAGE ON SCHEMA public TO agent_web1;
-- read the certificates to install
GRANT SELECT ON certs TO agent_web1;
-- one current row per name and entry: insert a new one, update its own (UPDATE ... WHERE reads
-- the rows it matches: SELECT); a new row's id comes from the sequence (USAGE)
GRANT SELECT, INSERT, UPDATE ON lecentral_deployments TO agent_web1;
GRANT USAGE ON SEQUENCE lecentral_deployments_id_seq TO agent_web1;
-- append its run to the history; INSERT ... RETURNING id (how SQLAlchemy learns the new id)
-- reads that one column
GRANT INSERT, SELECT (id) ON lecentral_runs TO agent_web1;
GRANT USAGE ON SEQUENCE lecentral_runs_id_seq TO agent_web1;
-- append install reports to the event log (lecentral-install with [agent] report = true)
GRANT INSERT, SELECT (id) ON lecentral_events TO agent_web1;
GRANT USAGE ON SEQUENCE lecentral_events_id_seq TO agent_web1;
