package pixelssql;

import javax.security.sasl.AuthenticationException;

import org.apache.hive.service.auth.PasswdAuthenticationProvider;

/**
 * The JDBC endpoint's password check (HiveServer2's CUSTOM authentication): user {@code admin}
 * with the admin secret, or user {@code reader} with the read-only secret. The name must say the
 * role, so that the check rule can place a session from its user name alone.
 */
public final class SecretAuthentication implements PasswdAuthenticationProvider {

  @Override
  public void Authenticate(String user, String password) throws AuthenticationException {
    ClientGuard.Role role = ClientGuard.roleOfSecret(password);
    String expected =
        role == ClientGuard.Role.ADMIN
            ? ClientGuard.ADMIN_USER
            : role == ClientGuard.Role.READER ? ClientGuard.READER_USER : null;
    if (expected == null) {
      throw new AuthenticationException(
          "pixels-sql serve: wrong secret (pixels-sql token prints the admin and read-only"
              + " secrets)");
    }
    if (!expected.equals(user)) {
      throw new AuthenticationException(
          "pixels-sql serve: this secret signs in as user '" + expected + "', not '" + user + "'");
    }
  }
}
