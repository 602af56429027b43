-- The seed's certs table (see sql/mysql/certs.sql), in PostgreSQL's types: same columns, same meaning.
-- VARCHAR, not CHAR: PostgreSQL pads CHAR(n) with blanks on read.
CREATE TABLE certs (
  name VARCHAR(250) NOT NULL PRIMARY KEY,
  enable CHAR(1) DEFAULT 'Y' CHECK (enable IN ('Y','N')),
  comment TEXT,
  certbot CHAR(1) DEFAULT 'N' CHECK (certbot IN ('Y','N')),
  csr BYTEA NOT NULL,
  ca BYTEA,
  crt BYTEA,
  md5_modulus VARCHAR(64) NOT NULL,
  md5_ca VARCHAR(64) DEFAULT NULL,
  ts_expire BIGINT DEFAULT NULL CHECK (ts_expire >= 0),
  ts_last_update BIGINT DEFAULT NULL CHECK (ts_last_update >= 0),
  count_fail_update INTEGER DEFAULT NULL,
  old_ca BYTEA,
  old_crt BYTEA,
  webroot_path TEXT
)
