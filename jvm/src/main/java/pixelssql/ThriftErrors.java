package pixelssql;

import java.lang.reflect.Field;

import org.apache.hive.service.CompositeService;
import org.apache.hive.service.Service;
import org.apache.hive.service.cli.thrift.ThriftBinaryCLIService;
import org.apache.thrift.TException;
import org.apache.thrift.TProcessor;
import org.apache.thrift.TProcessorFactory;
import org.apache.thrift.protocol.TField;
import org.apache.thrift.protocol.TProtocol;
import org.apache.thrift.protocol.TProtocolDecorator;
import org.apache.thrift.protocol.TType;
import org.apache.thrift.server.TServer;
import org.apache.thrift.transport.TTransport;

/**
 * Error messages of the JDBC endpoint without the server's Java stack.
 *
 * <p>Spark's Thrift server answers a client polling a failed statement (what the Hive JDBC driver,
 * beeline and BI tools do: statements run asynchronously) with the whole stack trace of the
 * failure as the error message, so a client shows ~100 lines of server frames around the one line
 * that says what went wrong. This wraps the server's processor so that every {@code errorMessage}
 * it writes ends before the first stack frame: the message, its SQLSTATE line and, for a syntax
 * error, Spark's caret lines stay. The frames are still in the server's log.
 */
public final class ThriftErrors {

  private ThriftErrors() {}

  /** Wraps the processor of {@code thriftServer}'s binary endpoint; false if it has none. */
  public static boolean install(Object thriftServer) throws ReflectiveOperationException {
    if (!(thriftServer instanceof CompositeService)) {
      return false;
    }
    for (Service service : ((CompositeService) thriftServer).getServices()) {
      if (service instanceof ThriftBinaryCLIService) {
        Field serverField = ThriftBinaryCLIService.class.getDeclaredField("server");
        serverField.setAccessible(true);
        TServer server = (TServer) serverField.get(service);
        if (server == null) {
          return false;
        }
        Field factoryField = TServer.class.getDeclaredField("processorFactory_");
        factoryField.setAccessible(true);
        TProcessorFactory original = (TProcessorFactory) factoryField.get(server);
        factoryField.set(server, new ShortErrorProcessorFactory(original));
        return true;
      }
    }
    return false;
  }

  /** {@code message} up to its first stack frame, without the exception class it starts with. */
  static String firstLines(String message) {
    if (message == null) {
      return null;
    }
    StringBuilder kept = new StringBuilder();
    for (String line : message.split("\n", -1)) {
      String trimmed = line.stripLeading();
      if (trimmed.startsWith("at ") && line.startsWith("\t") || trimmed.startsWith("Caused by:")) {
        break;
      }
      if (kept.length() > 0) {
        kept.append('\n');
      }
      kept.append(line);
    }
    String text = kept.toString().stripTrailing();
    String prefix = "org.apache.hive.service.cli.HiveSQLException: ";
    return text.startsWith(prefix) ? text.substring(prefix.length()) : text;
  }

  private static final class ShortErrorProcessorFactory extends TProcessorFactory {
    private final TProcessorFactory original;

    ShortErrorProcessorFactory(TProcessorFactory original) {
      super(null);
      this.original = original;
    }

    @Override
    public TProcessor getProcessor(TTransport transport) {
      TProcessor processor = original.getProcessor(transport);
      return (in, out) -> processor.process(in, new ShortErrorProtocol(out));
    }

    @Override
    public boolean isAsyncProcessor() {
      return original.isAsyncProcessor();
    }
  }

  /** Writes what it is given, but an {@code errorMessage} field's text cut by firstLines. */
  private static final class ShortErrorProtocol extends TProtocolDecorator {
    private boolean inErrorMessage;

    ShortErrorProtocol(TProtocol protocol) {
      super(protocol);
    }

    @Override
    public void writeFieldBegin(TField field) throws TException {
      inErrorMessage = field.type == TType.STRING && "errorMessage".equals(field.name);
      super.writeFieldBegin(field);
    }

    @Override
    public void writeFieldEnd() throws TException {
      inErrorMessage = false;
      super.writeFieldEnd();
    }

    @Override
    public void writeString(String text) throws TException {
      super.writeString(inErrorMessage ? firstLines(text) : text);
    }
  }
}
