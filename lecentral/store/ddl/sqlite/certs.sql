-- The seed's certs table (see sql/mysql/certs.sql), in SQLite's types: same columns, same meaning.
CREATE TABLE certs (
  name CHAR(250) NOT NULL PRIMARY KEY,
  enable CHAR(1) DEFAULT 'Y' CHECK (enable IN ('Y','N')),
  comment TEXT,
  certbot CHAR(1) DEFAULT 'N' CHECK (certbot IN ('Y','N')),
  csr BLOB NOT NULL,
  ca BLOB,
  crt BLOB,
  md5_modulus CHAR(64) NOT NULL,
  md5_ca CHAR(64) DEFAULT NULL,
  ts_expire INTEGER DEFAULT NULL CHECK (ts_expire >= 0),
  ts_last_update INTEGER DEFAULT NULL CHECK (ts_last_update >= 0),
  count_fail_update INTEGER DEFAULT NULL,
  old_ca BLOB,
  old_crt BLOB,
  webroot_path TEXT
)
