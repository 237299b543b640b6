package pixelssql;

import java.lang.reflect.Field;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.hadoop.hive.ql.metadata.Hive;

/**
 * Keeps the Thrift server's Hive client from loading Hive's own built-in function registry.
 *
 * <p>Spark 4 no longer ships {@code hive-llap-common} (SPARK-51029), and Hive 2.3's {@code
 * FunctionRegistry} cannot be initialised without it: one of its built-in table functions
 * (get_splits) names an LLAP class. Spark's own code asks for Hive clients that skip that registry
 * ({@code Hive.getWithoutRegisterFns}), but Hive's {@code SessionState.close}, run when a JDBC
 * client closes its session, asks for one through {@code Hive.get}; when the calling thread has no
 * usable client at that moment (its cached client was made for another user or another metastore
 * configuration, which happens when sessions and statements interleave) Hive makes a new one and
 * first registers every function. That fails with {@code NoClassDefFoundError} and leaves Hive's
 * "registration under way" flag set, so every later client made that way waits for it for ever:
 * the client's CloseSession fails and later sessions hang.
 *
 * <p>Spark runs SQL functions from its own registry, never Hive's; Hive's registration has nothing
 * to give the server. {@link #markRegistered()} records it as already done, before any client can
 * connect, so Hive never starts it.
 */
public final class HiveBuiltins {

  private HiveBuiltins() {}

  /** Marks Hive's all-functions registration done; returns the flag's value before. */
  public static int markRegistered() throws ReflectiveOperationException {
    Field done = Hive.class.getDeclaredField("REG_FUNCS_DONE");
    done.setAccessible(true);
    Field field = Hive.class.getDeclaredField("didRegisterAllFuncs");
    field.setAccessible(true);
    AtomicInteger state = (AtomicInteger) field.get(null);
    return state.getAndSet(done.getInt(null));
  }
}
