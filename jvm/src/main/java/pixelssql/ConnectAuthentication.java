package pixelssql;

import org.sparkproject.connect.grpc.ForwardingServerCallListener;
import org.sparkproject.connect.grpc.Metadata;
import org.sparkproject.connect.grpc.ServerCall;
import org.sparkproject.connect.grpc.ServerCallHandler;
import org.sparkproject.connect.grpc.ServerInterceptor;
import org.sparkproject.connect.grpc.Status;
import org.sparkproject.connect.protobuf.Descriptors;
import org.sparkproject.connect.protobuf.Message;

/**
 * The Spark Connect endpoint's check (a gRPC interceptor named in
 * {@code spark.connect.grpc.interceptor.classes}): every call carries one of the home's secrets
 * as a bearer token ({@code sc://localhost:PORT/;token=SECRET}); the secret decides the role. A
 * session id first used with one role's secret cannot be used with another's.
 *
 * <p>Spark's own {@code spark.connect.authenticate.token} takes one secret and keeps it in the
 * session settings, which the Config RPC of Spark 4.3.0 hands to any client (SPARK-58658): the
 * secrets here live only in {@link ClientGuard}.
 */
public final class ConnectAuthentication implements ServerInterceptor {

  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
  private static final String BEARER = "Bearer ";

  @Override
  public <Q, A> ServerCall.Listener<Q> interceptCall(
      ServerCall<Q, A> call, Metadata headers, ServerCallHandler<Q, A> next) {
    String value = headers.get(AUTHORIZATION);
    ClientGuard.Role role =
        value != null && value.startsWith(BEARER)
            ? ClientGuard.roleOfSecret(value.substring(BEARER.length()).trim())
            : null;
    if (role == null) {
      call.close(
          Status.UNAUTHENTICATED.withDescription(
              "pixels-sql serve: "
                  + (value == null ? "no secret" : "wrong secret")
                  + " (connect to sc://localhost:PORT/;token=SECRET; pixels-sql token prints it)"),
          new Metadata());
      return new ServerCall.Listener<Q>() {};
    }
    return new Bound<>(next.startCall(call, headers), call, role);
  }

  /** Checks the session id of each request against the role of the call's secret. */
  private static final class Bound<Q, A>
      extends ForwardingServerCallListener.SimpleForwardingServerCallListener<Q> {
    private final ServerCall<Q, A> call;
    private final ClientGuard.Role role;
    private boolean refused;

    Bound(ServerCall.Listener<Q> delegate, ServerCall<Q, A> call, ClientGuard.Role role) {
      super(delegate);
      this.call = call;
      this.role = role;
    }

    @Override
    public void onMessage(Q message) {
      if (refused) {
        return;
      }
      String session = sessionId(message);
      if (session != null && !ClientGuard.bindConnectSession(session, role)) {
        refused = true;
        call.close(
            Status.PERMISSION_DENIED.withDescription(
                "pixels-sql serve: session " + session + " belongs to a client of another role"),
            new Metadata());
        return;
      }
      super.onMessage(message);
    }

    @Override
    public void onHalfClose() {
      if (!refused) {
        super.onHalfClose();
      }
    }

    @Override
    public void onReady() {
      if (!refused) {
        super.onReady();
      }
    }

    private static String sessionId(Object message) {
      if (!(message instanceof Message)) {
        return null;
      }
      Message request = (Message) message;
      Descriptors.FieldDescriptor field =
          request.getDescriptorForType().findFieldByName("session_id");
      if (field == null || field.getJavaType() != Descriptors.FieldDescriptor.JavaType.STRING) {
        return null;
      }
      Object value = request.getField(field);
      return value instanceof String && !((String) value).isEmpty() ? (String) value : null;
    }
  }
}
