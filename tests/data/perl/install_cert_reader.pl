#!/usr/bin/perl
# The database side of the seed's install_cert.pl, with DBI and DBD::mysql as the seed uses them:
# read one row of certs and decide as the seed describes (tests/test_perl_agent.py runs it on
# rows lecentral wrote). It writes the certificate (and the CA when it changed) to OUTDIR and
# prints one line:
#   skip: disabled | skip: expired | skip: not newer
#   install ts_expire=N ca_changed=0|1 md5_ca_matches=yes|no
# Usage: install_cert_reader.pl HOST PORT DATABASE USER NAME INSTALLED_TS_EXPIRE INSTALLED_MD5_CA OUTDIR
# (the password in $DBI_PASS, as a cron job would keep it out of the process list)
use strict;
use warnings;
use DBI;
use Digest::MD5 qw(md5_hex);

my ($host, $port, $database, $user, $name, $installed_expire, $installed_md5_ca, $outdir) = @ARGV;
my $dbh = DBI->connect("DBI:mysql:database=$database;host=$host;port=$port", $user, $ENV{DBI_PASS},
                       {RaiseError => 1, PrintError => 0});
my $row = $dbh->selectrow_hashref(
    "SELECT enable, ts_expire, crt, ca, md5_ca FROM certs WHERE name = ?", undef, $name);
die "no row for $name\n" unless $row;
$dbh->disconnect;

# 1. if the domain is enable
if (!defined $row->{enable} || $row->{enable} ne 'Y') { print "skip: disabled\n"; exit 0; }
# 2. if the certificate in the database is not yet expired
if (!$row->{ts_expire} || $row->{ts_expire} <= time()) { print "skip: expired\n"; exit 0; }
# 3. if it is newer than the installed one (two timestamps less than an hour apart are the same)
if ($row->{ts_expire} < $installed_expire + 3600) { print "skip: not newer\n"; exit 0; }

open(my $crt, '>', "$outdir/crt.pem") or die "$outdir/crt.pem: $!\n";
print $crt $row->{crt};
close $crt;
# 3.3 if the CA has been updated (comparing md5_ca) installs the new CA
my $ca_changed = (($row->{md5_ca} // '') ne $installed_md5_ca) ? 1 : 0;
if ($ca_changed) {
    open(my $ca, '>', "$outdir/ca.pem") or die "$outdir/ca.pem: $!\n";
    print $ca $row->{ca};
    close $ca;
}
my $matches = (md5_hex($row->{ca} // '') eq ($row->{md5_ca} // '')) ? 'yes' : 'no';
print "install ts_expire=$row->{ts_expire} ca_changed=$ca_changed md5_ca_matches=$matches\n";
