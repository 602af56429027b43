-- MySQL/MariaDB accounts for lecentral. Replace the passwords and host patterns.
-- The central host reads and writes certs and lecentral's own tables, and creates them once
-- (lecentral init); GET_LOCK needs no privilege.
CREATE USER 'lecentral'@'central.example.com' IDENTIFIED BY 'CHANGE-ME';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON certs.* TO 'lecentral'@'central.example.com';

-- Each server's agent only reads the certs table: a read-only account is enough.
CREATE USER 'reader'@'%.example.com' IDENTIFIED BY 'CHANGE-ME-TOO';
GRANT SELECT ON certs.certs TO 'reader'@'%.example.com';
