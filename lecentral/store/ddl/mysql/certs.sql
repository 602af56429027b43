CREATE TABLE `certs` (
  `name` char(250) COLLATE ascii_bin NOT NULL,
  `enable` enum('Y','N') COLLATE ascii_bin DEFAULT 'Y',
  `comment` tinytext COLLATE ascii_bin,
  `certbot` enum('Y','N') COLLATE ascii_bin DEFAULT 'N',
  `csr` blob NOT NULL,
  `ca` blob,
  `crt` blob,
  `md5_modulus` char(64) COLLATE ascii_bin NOT NULL,
  `md5_ca` char(64) COLLATE ascii_bin DEFAULT NULL,
  `ts_expire` int(64) unsigned DEFAULT NULL,
  `ts_last_update` int(64) unsigned DEFAULT NULL,
  `count_fail_update` int(8) DEFAULT NULL,
  `old_ca` blob,
  `old_crt` blob,
  `webroot_path` tinytext COLLATE ascii_bin,
  PRIMARY KEY (`name`),
  KEY `name` (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=ascii COLLATE=ascii_bin
