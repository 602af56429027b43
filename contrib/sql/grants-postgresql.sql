-- PostgreSQL roles for lecentral. Replace the passwords.
CREATE ROLE lecentral LOGIN PASSWORD 'CHANGE-ME';
GRANT CONNECT, CREATE ON DATABASE certs TO lecentral;
GRANT USAGE, CREATE ON SCHEMA public TO lecentral;

CREATE ROLE reader LOGIN PASSWORD 'CHANGE-ME-TOO';
GRANT CONNECT ON DATABASE certs TO reader;
-- after `lecentral init`:
GRANT SELECT ON certs TO reader;
