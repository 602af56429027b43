-- MySQL/MariaDB accounts for lecentral (docs/operator-guide.md, "Database accounts for reporting
-- agents"). Replace the passwords, the host patterns, the account names and, if yours differs,
-- the database name `certs`. Run as an administrator: mariadb < grants-mysql.sql
-- (tests/test_agent_grants.py runs this very file, with the names replaced).

-- == the central host (before lecentral init) ==
-- lecentral renew and the admin commands read and write certs and lecentral's own tables
-- (SELECT, INSERT, UPDATE, DELETE); lecentral init/upgrade create and migrate the own tables
-- (CREATE, ALTER, INDEX, DROP) and the reporting triggers (TRIGGER), which then run as this
-- account. GET_LOCK needs no privilege. With binary logging on, an account without SUPER may
-- create triggers only if the server has log_bin_trust_function_creators = 1.
CREATE USER 'lecentral'@'central.example.com' IDENTIFIED BY 'CHANGE-ME';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP, TRIGGER ON `certs`.* TO 'lecentral'@'central.example.com';

-- == an agent that does not report (agent.report = false): read-only (after lecentral init) ==
CREATE USER 'reader'@'%.example.com' IDENTIFIED BY 'CHANGE-ME-TOO';
GRANT SELECT ON `certs`.`certs` TO 'reader'@'%.example.com';

-- == one account per reporting agent (after lecentral init; repeat for each server) ==
-- Then, on the central host, map the account to its host (the triggers refuse any other host):
--   lecentral agent add web1.example.com --db-user agent_web1
-- No DELETE anywhere, no UPDATE of runs or events: a stolen credential cannot erase history,
-- and cannot touch certs beyond reading it.
CREATE USER 'agent_web1'@'web1.example.com' IDENTIFIED BY 'CHANGE-ME-AGENT';
-- read the certificates to install
GRANT SELECT ON `certs`.`certs` TO 'agent_web1'@'web1.example.com';
-- one current row per name and entry: insert a new one, update its own (an UPDATE ... WHERE
-- reads the rows it matches, which needs SELECT on MariaDB/MySQL)
GRANT SELECT, INSERT, UPDATE ON `certs`.`lecentral_deployments` TO 'agent_web1'@'web1.example.com';
-- append its run to the history
GRANT INSERT ON `certs`.`lecentral_runs` TO 'agent_web1'@'web1.example.com';
-- append install reports to the event log (lecentral-install with [agent] report = true)
GRANT INSERT ON `certs`.`lecentral_events` TO 'agent_web1'@'web1.example.com';
