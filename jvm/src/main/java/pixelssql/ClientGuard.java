package pixelssql;

import java.io.IOException;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.WeakHashMap;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.catalog.CatalogTable;
import org.apache.spark.sql.catalyst.expressions.CallMethodViaReflection;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.Literal;
import org.apache.spark.sql.catalyst.expressions.PythonUDF;
import org.apache.spark.sql.catalyst.expressions.ScalaUDF;
import org.apache.spark.sql.catalyst.expressions.objects.StaticInvoke;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.execution.command.SetCommand;
import org.apache.spark.sql.execution.datasources.HadoopFsRelation;
import org.apache.spark.sql.execution.datasources.LogicalRelation;
import org.apache.spark.sql.execution.datasources.v2.DataSourceV2Relation;
import org.apache.spark.sql.types.AbstractDataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StringType;
import org.apache.spark.unsafe.types.UTF8String;

import scala.Option;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * What a client of {@code pixels-sql serve} may do (docs/security.md): who a session is, and the
 * check rule that refuses, when a statement is analysed, what its role may not do.
 *
 * <p>Off until {@link #enable} is called (by {@code pixels-sql serve} only): the embedded session
 * of the command line, tests and notebooks is its user's own and checks nothing. Once on, every
 * session is one of three roles:
 *
 * <ul>
 *   <li>{@link Role#PIPELINE}: the server's own sessions ({@link #trust}) and Spark Connect
 *       clients holding the home's pipeline secret (the command line, which can read the home
 *       anyway). Nothing is checked.
 *   <li>{@link Role#ADMIN}: the admin secret (dbt, data engineers). Tables and views in the
 *       catalog; files only under the allowed roots; no code of its own on the server.
 *   <li>{@link Role#READER}: the read-only secret (analysts, BI tools): queries, SHOW, DESCRIBE,
 *       USE and harmless SET only.
 * </ul>
 *
 * <p>A session the guard cannot place (neither trusted, nor a known JDBC or Connect client) is a
 * reader: least privilege by default. Security state lives in this class, never in a setting a
 * client could change or read (a JDBC URL may set session settings at open, past any check).
 */
public final class ClientGuard {

  /** What a session may do, from most to least. */
  public enum Role {
    PIPELINE,
    ADMIN,
    READER
  }

  /** JDBC user names: the secret decides the role, the name must say it (docs/security.md). */
  public static final String ADMIN_USER = "admin";

  public static final String READER_USER = "reader";

  private static volatile boolean enabled;
  private static volatile boolean allowUdfs;
  private static volatile Role unauthenticatedRole = Role.ADMIN;
  private static volatile Map<Role, byte[]> secrets = Map.of();
  private static volatile List<String> fixedRoots = List.of();
  private static volatile Path rootsFile;
  private static volatile long rootsFileStamp = Long.MIN_VALUE;
  private static volatile List<String> fileRoots = List.of();
  private static volatile Object thriftServer;

  private static final Map<SparkSession, Role> SESSIONS =
      Collections.synchronizedMap(new WeakHashMap<>());
  /** Spark Connect session ids and the role of the secret that first used each. */
  private static final Map<String, Role> CONNECT_SESSIONS = new ConcurrentHashMap<>();
  /** Per function name: the argument positions read as files, and those written to. */
  private static final Map<String, int[][]> PATH_ARGUMENTS = new ConcurrentHashMap<>();

  /**
   * Settings a client session may not SET: they reach past the session (file systems and their
   * credentials, catalogs that load classes, the warehouse), undo a protection, or are the
   * guard's own. Spark refuses static and core settings itself unless the legacy switch below
   * is flipped, so it is here too.
   */
  static final List<String> PROTECTED_SETTINGS =
      List.of(
          "spark.hadoop.",
          "spark.sql.catalog.",
          "spark.sql.defaultCatalog",
          "spark.sql.extensions",
          "spark.sql.warehouse.dir",
          "spark.sql.hive.",
          "spark.sql.legacy.",
          "spark.sql.sources.",
          "spark.sql.optimizer.excludedRules",
          "spark.sql.streaming.",
          "spark.sql.artifact.",
          "spark.sql.execution.python",
          "spark.sql.execution.pyspark",
          "spark.sql.pyspark.",
          "spark.sql.udf.",
          "spark.sql.session.",
          "spark.sql.files.",
          "spark.sql.externalCatalogHooks",
          "spark.python.",
          "spark.pyspark.",
          "spark.jars",
          "spark.files",
          "spark.archives",
          "spark.driver.",
          "spark.executor.",
          "spark.connect.",
          "spark.pixels_sql.",
          "fs.",
          "hive.",
          "javax.jdo.",
          "datanucleus.");

  /** Settings under a protected prefix that clients may still SET (dbt's incremental models). */
  static final Set<String> CLIENT_SETTINGS =
      Set.of("spark.sql.sources.partitionoverwritemode", "spark.sql.sources.default");

  /**
   * Commands a reader may run: queries, listings and descriptions of the catalog, USE, SET of a
   * harmless setting, EXPLAIN. Names, since several live in modules this jar does not compile
   * against.
   */
  static final Set<String> READER_COMMANDS =
      Set.of(
          "SetCommand",
          "ResetCommand",
          "SetCatalogAndNamespace",
          "SetNamespaceCommand",
          "SetCatalogCommand",
          "ExplainCommand",
          "DescribeQueryCommand",
          "ShowCurrentNamespaceCommand");

  /** Plans no client may run: they start processes, load code, or write outside the catalog. */
  static final Map<String, String> REFUSED_NODES =
      Map.ofEntries(
          Map.entry("ScriptTransformation", "script transformation (TRANSFORM ... USING)"),
          Map.entry("AddJarsCommand", "ADD JAR"),
          Map.entry("AddFilesCommand", "ADD FILE"),
          Map.entry("AddArchivesCommand", "ADD ARCHIVE"),
          Map.entry("InsertIntoDir", "INSERT OVERWRITE DIRECTORY"),
          Map.entry("InsertIntoDataSourceDirCommand", "INSERT OVERWRITE DIRECTORY"),
          Map.entry("InsertIntoHiveDirCommand", "INSERT OVERWRITE DIRECTORY"),
          Map.entry("LoadDataCommand", "LOAD DATA"),
          Map.entry("CreateFunctionCommand", "CREATE FUNCTION ... AS '<class>' (Java code)"),
          Map.entry("RefreshFunctionCommand", "REFRESH FUNCTION"),
          Map.entry("AlterTableSetLocationCommand", "ALTER TABLE ... SET LOCATION"),
          Map.entry("AlterTableAddPartitionCommand", "ALTER TABLE ... ADD PARTITION"),
          Map.entry("SetNamespaceLocation", "ALTER DATABASE ... SET LOCATION"),
          Map.entry("CreateTempViewUsing", "a temporary view over a data source (USING)"));

  /**
   * The formats a client's table may have: files in the warehouse. Others (jdbc, ...) reach
   * outside the catalog when the table is made or read.
   */
  static final Set<String> TABLE_FORMATS =
      Set.of("parquet", "orc", "json", "csv", "text", "avro", "binaryfile", "delta", "hive");

  /** Python or JVM code sent by a client: refused unless the server runs with --allow-udfs. */
  static final Set<String> CLIENT_CODE_NODES =
      Set.of(
          "MapInPandas",
          "MapInArrow",
          "PythonMapInArrow",
          "FlatMapGroupsInPandas",
          "FlatMapGroupsInArrow",
          "FlatMapCoGroupsInPandas",
          "FlatMapCoGroupsInArrow",
          "FlatMapGroupsInPandasWithState",
          "TransformWithStateInPandas",
          "MapPartitions",
          "MapElements",
          "MapGroups",
          "FlatMapGroupsWithState",
          "CoGroup",
          "AppendColumns",
          "TypedFilter",
          "PythonDataSourceV2",
          "PythonDataSource");

  private ClientGuard() {}

  // ---- configuration, from the server's Python process ----

  /**
   * Turns the guard on. {@code roots}: folders (or object-storage prefixes) admin and reader
   * clients may read; {@code rootsFile}: a file of more roots, one per line, re-read when it
   * changes (the command line adds the folders it ingests); {@code authenticated}: false for
   * {@code --no-auth}, where a client that is not a known reader is an admin.
   */
  public static synchronized void enable(
      String roots, String rootsFile, boolean allowUdfs, boolean authenticated) {
    ClientGuard.fixedRoots = canonicalRoots(lines(roots));
    ClientGuard.rootsFile = rootsFile == null || rootsFile.isEmpty() ? null : Paths.get(rootsFile);
    ClientGuard.rootsFileStamp = Long.MIN_VALUE;
    ClientGuard.allowUdfs = allowUdfs;
    ClientGuard.unauthenticatedRole = authenticated ? Role.READER : Role.ADMIN;
    ClientGuard.enabled = true;
  }

  /** Turns the guard off (the server stopped; tests that start several in one JVM). */
  public static synchronized void disable() {
    enabled = false;
    SESSIONS.clear();
    CONNECT_SESSIONS.clear();
    secrets = Map.of();
    thriftServer = null;
  }

  /** The three secrets; an empty string leaves that role without one. */
  public static synchronized void secrets(String pipeline, String admin, String reader) {
    Map<Role, byte[]> found = new java.util.EnumMap<>(Role.class);
    put(found, Role.PIPELINE, pipeline);
    put(found, Role.ADMIN, admin);
    put(found, Role.READER, reader);
    secrets = Collections.unmodifiableMap(found);
  }

  private static void put(Map<Role, byte[]> found, Role role, String secret) {
    if (secret != null && !secret.isEmpty()) {
      found.put(role, digest(secret));
    }
  }

  /** A session of the server's own: never checked. */
  public static void trust(SparkSession session) {
    SESSIONS.put(session, Role.PIPELINE);
  }

  /** The Thrift server, to find the user behind a JDBC session. */
  public static void thriftServer(Object server) {
    thriftServer = server;
  }

  /** Called by the Python side for each injected function it registers. */
  public static void pathArguments(String function, String reads, String writes) {
    PATH_ARGUMENTS.put(function.toLowerCase(Locale.ROOT), new int[][] {ints(reads), ints(writes)});
  }

  private static int[] ints(String text) {
    return lines(text.replace(',', '\n')).stream().mapToInt(Integer::parseInt).toArray();
  }

  // ---- secrets ----

  /** The role a secret grants, or null. Compared in constant time, as digests. */
  static Role roleOfSecret(String secret) {
    if (secret == null) {
      return null;
    }
    byte[] given = digest(secret);
    Role found = null;
    for (Map.Entry<Role, byte[]> entry : secrets.entrySet()) {
      if (MessageDigest.isEqual(entry.getValue(), given)) {
        found = entry.getKey();
      }
    }
    return found;
  }

  private static byte[] digest(String secret) {
    try {
      return MessageDigest.getInstance("SHA-256").digest(secret.getBytes(StandardCharsets.UTF_8));
    } catch (java.security.NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }

  /**
   * Records that the Spark Connect session {@code sessionId} is used with {@code role}'s secret;
   * false when another role's secret used it first (a reader may not borrow an admin's session).
   */
  static boolean bindConnectSession(String sessionId, Role role) {
    Role bound = CONNECT_SESSIONS.putIfAbsent(sessionId, role);
    return bound == null || bound == role;
  }

  // ---- who a session is ----

  /** The role of {@code session}; {@link Role#PIPELINE} while the guard is off. */
  public static Role role(SparkSession session) {
    if (!enabled || session == null) {
      return Role.PIPELINE;
    }
    Role known = SESSIONS.get(session);
    if (known != null) {
      return known;
    }
    Role found = connectRole(session);
    if (found == null) {
      found = jdbcRole(session);
    }
    if (found == null) {
      // Not placed yet (e.g. the USE a JDBC session runs while it opens): least privilege,
      // not remembered, so that the session is placed once it is known.
      return Role.READER;
    }
    SESSIONS.put(session, found);
    return found;
  }

  private static Role connectRole(SparkSession session) {
    org.apache.spark.sql.connect.service.SparkConnectSessionManager manager;
    try {
      manager = org.apache.spark.sql.connect.service.SparkConnectService$.MODULE$.sessionManager();
    } catch (LinkageError | RuntimeException e) {
      return null;
    }
    for (org.apache.spark.sql.connect.service.SessionHolderInfo info :
        CollectionConverters.asJava(manager.listActiveSessions())) {
      Option<org.apache.spark.sql.connect.service.SessionHolder> holder =
          manager.getIsolatedSessionIfPresent(
              new org.apache.spark.sql.connect.service.SessionKey(info.userId(), info.sessionId()));
      if (holder.isDefined() && holder.get().session() == session) {
        Role bound = CONNECT_SESSIONS.get(info.sessionId());
        // Unbound: a server without authentication (its clients are admins unless they say
        // they are readers); with it, the interceptor binds every session before it runs.
        return bound != null ? bound : unauthenticatedRole;
      }
    }
    return null;
  }

  private static Role jdbcRole(SparkSession session) {
    Object server = thriftServer;
    if (!(server instanceof org.apache.hive.service.CompositeService)) {
      return null;
    }
    for (org.apache.hive.service.Service service :
        ((org.apache.hive.service.CompositeService) server).getServices()) {
      if (!(service instanceof org.apache.hive.service.cli.CLIService)) {
        continue;
      }
      org.apache.hive.service.cli.session.SessionManager sessions =
          ((org.apache.hive.service.cli.CLIService) service).getSessionManager();
      Object operations = sessions.getOperationManager();
      if (!(operations
          instanceof org.apache.spark.sql.hive.thriftserver.server.SparkSQLOperationManager)) {
        return null;
      }
      Map<org.apache.hive.service.cli.SessionHandle, SparkSession> contexts =
          ((org.apache.spark.sql.hive.thriftserver.server.SparkSQLOperationManager) operations)
              .sessionToContexts();
      for (Map.Entry<org.apache.hive.service.cli.SessionHandle, SparkSession> entry :
          contexts.entrySet()) {
        if (entry.getValue() != session) {
          continue;
        }
        try {
          String user = sessions.getSession(entry.getKey()).getUserName();
          // With authentication on, the provider let this name in only with its own secret.
          return READER_USER.equals(user) ? Role.READER : Role.ADMIN;
        } catch (org.apache.hive.service.cli.HiveSQLException e) {
          return null;
        }
      }
    }
    return null;
  }

  // ---- the check rule ----

  /** The check rule: throws a one-line error when {@code session} may not run {@code plan}. */
  static void check(SparkSession session, LogicalPlan plan) {
    if (!enabled) {
      return;
    }
    Role role = role(session);
    if (role == Role.PIPELINE) {
      return;
    }
    List<String> roots = roots();
    String warehouse = session.conf().get("spark.sql.warehouse.dir", "");
    plan.foreachWithSubqueries(
        new AbstractFunction1<LogicalPlan, BoxedUnit>() {
          @Override
          public BoxedUnit apply(LogicalPlan node) {
            checkNode(node, role, roots, warehouse);
            for (Expression expression : CollectionConverters.asJava(node.expressions())) {
              expression.foreach(
                  new AbstractFunction1<Expression, BoxedUnit>() {
                    @Override
                    public BoxedUnit apply(Expression part) {
                      checkExpression(part, role, roots);
                      return BoxedUnit.UNIT;
                    }
                  });
            }
            return BoxedUnit.UNIT;
          }
        });
  }

  private static void checkNode(LogicalPlan node, Role role, List<String> roots, String warehouse) {
    String name = node.getClass().getSimpleName();
    String refused = REFUSED_NODES.get(name);
    if (refused != null) {
      throw refusal(role, refused + " is not allowed");
    }
    if (CLIENT_CODE_NODES.contains(name) && !allowUdfs) {
      throw refusal(role, clientCodeMessage(name));
    }
    if (node instanceof SetCommand) {
      checkSet((SetCommand) node, role);
      return;
    }
    if (role == Role.READER && node instanceof Command && !readerMayRun(node, name)) {
      throw refusal(role, "a read-only client may run queries only, not " + describe(name));
    }
    if (node instanceof LogicalRelation) {
      LogicalRelation relation = (LogicalRelation) node;
      if (relation.catalogTable().isDefined()) {
        return;
      }
      if (relation.relation() instanceof HadoopFsRelation) {
        for (org.apache.hadoop.fs.Path path :
            CollectionConverters.asJava(
                ((HadoopFsRelation) relation.relation()).location().rootPaths())) {
          requireInside(path.toString(), roots, role, "read");
        }
        return;
      }
      throw refusal(role, "reading a data source outside the catalog is not allowed");
    }
    if (node instanceof DataSourceV2Relation) {
      DataSourceV2Relation relation = (DataSourceV2Relation) node;
      // Listings were checked when list_files/read_files built them (checkListing).
      if (relation.identifier().isDefined() || relation.table() instanceof ListingTable) {
        return;
      }
      throw refusal(role, "reading a data source outside the catalog is not allowed");
    }
    if (name.startsWith("StreamingRelation") || name.startsWith("StreamingDataSourceV2")) {
      throw refusal(role, "streaming reads are for the pipeline only");
    }
    if (node instanceof Command) {
      checkLocations(node, role, warehouse);
    }
  }

  private static boolean readerMayRun(LogicalPlan node, String name) {
    if (name.startsWith("Show") || name.startsWith("Describe") || READER_COMMANDS.contains(name)) {
      return true;
    }
    // A temporary view is the client's own session's; a persistent or global one is not.
    if (node instanceof org.apache.spark.sql.execution.command.CreateViewCommand) {
      return ((org.apache.spark.sql.execution.command.CreateViewCommand) node).viewType()
          == org.apache.spark.sql.catalyst.analysis.LocalTempView$.MODULE$;
    }
    return false;
  }

  /** A table created or written by a client lives in the warehouse, not at a path it picks. */
  private static void checkLocations(LogicalPlan node, Role role, String warehouse) {
    scala.collection.Iterator<Object> fields = node.productIterator();
    while (fields.hasNext()) {
      Object field = fields.next();
      if (field instanceof Option && ((Option<?>) field).isDefined()) {
        field = ((Option<?>) field).get();
      }
      String location = null;
      if (field instanceof CatalogTable) {
        Option<String> provider = ((CatalogTable) field).provider();
        if (provider.isDefined()
            && !TABLE_FORMATS.contains(provider.get().toLowerCase(Locale.ROOT))) {
          throw refusal(role, "a table of format " + provider.get() + " is not allowed");
        }
        Option<URI> uri = ((CatalogTable) field).storage().locationUri();
        if (uri.isDefined()) {
          location = uri.get().toString();
        }
      } else if (field instanceof org.apache.hadoop.fs.Path) {
        location = field.toString();
      } else if (field instanceof org.apache.spark.sql.catalyst.catalog.CatalogStorageFormat) {
        Option<URI> uri =
            ((org.apache.spark.sql.catalyst.catalog.CatalogStorageFormat) field).locationUri();
        if (uri.isDefined()) {
          location = uri.get().toString();
        }
      } else if (field instanceof scala.collection.Map) {
        @SuppressWarnings("unchecked")
        scala.collection.Map<Object, Object> options = (scala.collection.Map<Object, Object>) field;
        // A data source's path option; a database's location property (CREATE DATABASE).
        Option<Object> path = options.get("path");
        if (path.isEmpty()) {
          path = options.get("location");
        }
        if (path.isDefined()) {
          location = String.valueOf(path.get());
        }
      }
      if (location != null && !warehouse.isEmpty()) {
        requireInside(location, canonicalRoots(List.of(warehouse)), role, "write a table at");
      }
    }
  }

  private static void checkSet(SetCommand set, Role role) {
    if (set.kv().isEmpty()) {
      return;
    }
    scala.Tuple2<String, Option<String>> kv = set.kv().get();
    if (kv._2().isEmpty()) {
      return; // reading a setting
    }
    String key = kv._1().trim();
    String lower = key.toLowerCase(Locale.ROOT);
    if (CLIENT_SETTINGS.contains(lower)) {
      return;
    }
    for (String prefix : PROTECTED_SETTINGS) {
      if (lower.startsWith(prefix.toLowerCase(Locale.ROOT))) {
        throw refusal(role, "SET " + key + " is not allowed (a server-wide or security setting)");
      }
    }
  }

  private static void checkExpression(Expression expression, Role role, List<String> roots) {
    if (expression instanceof CallMethodViaReflection) {
      throw refusal(role, "reflection (java_method, reflect, try_reflect) is not allowed");
    }
    String name = expression.getClass().getSimpleName();
    if (name.startsWith("Hive") && name.contains("UD")) {
      throw refusal(role, "Hive functions (Java classes) are not allowed");
    }
    if (allowUdfs) {
      return;
    }
    if (expression instanceof ScalaUDF) {
      throw refusal(role, clientCodeMessage("a JVM UDF"));
    }
    if (expression instanceof PythonUDF
        || name.equals("PythonUDAF")
        || name.equals("PythonUDTF")
        || name.equals("TranspiledPythonUDF")) {
      if (!PythonFunctions.isOwn(expression)) {
        throw refusal(role, clientCodeMessage("a Python UDF"));
      }
    }
  }

  private static String clientCodeMessage(String what) {
    return describe(what)
        + " runs a client's code on the server, which this server does not allow (start it with"
        + " pixels-sql serve --allow-udfs to trust every client with it)";
  }

  private static String describe(String name) {
    return name.replaceAll("Command$", "").replaceAll("([a-z])([A-Z])", "$1 $2");
  }

  static RuntimeException refusal(Role role, String message) {
    String who = role == Role.READER ? "read-only client" : "client";
    return new SecurityException("pixels-sql serve: refused for a " + who + ": " + message);
  }

  // ---- file paths ----

  /**
   * The arguments of an injected function call, with each path argument checked when the query
   * runs (the path may come from a column: it is known only then). Unchanged for the pipeline.
   */
  static Seq<Expression> guardArguments(String function, Seq<Expression> arguments) {
    int[][] positions = PATH_ARGUMENTS.get(function.toLowerCase(Locale.ROOT));
    if (positions == null || !enabled) {
      return arguments;
    }
    SparkSession session = SparkSession.active();
    Role role = role(session);
    if (role == Role.PIPELINE) {
      return arguments;
    }
    List<Expression> guarded = new ArrayList<>(CollectionConverters.asJava(arguments));
    String roots = String.join("\n", roots());
    String prefix = role == Role.READER ? "R" : "A";
    for (int kind = 0; kind < 2; kind++) {
      for (int index : positions[kind]) {
        if (index >= guarded.size()) {
          continue;
        }
        Expression argument = guarded.get(index);
        if (!(argument.dataType() instanceof StringType)) {
          throw refusal(role, function + ": pass the path as a STRING");
        }
        Expression context = Literal.create(prefix + roots, DataTypes.StringType);
        List<Expression> call = List.of(argument, context);
        List<AbstractDataType> types = List.of();
        guarded.set(
            index,
            new StaticInvoke(
                ClientGuard.class,
                DataTypes.StringType,
                kind == 0 ? "readablePath" : "writablePath",
                CollectionConverters.asScala(call).toSeq(),
                CollectionConverters.asScala(types).toSeq(),
                true,
                true,
                true,
                Option.empty()));
      }
    }
    return CollectionConverters.asScala(guarded).toSeq();
  }

  /** Called by the generated code: {@code path} when it is inside the roots, else an error. */
  public static UTF8String readablePath(UTF8String path, UTF8String context) {
    checkPath(path.toString(), context.toString(), "read");
    return path;
  }

  public static UTF8String writablePath(UTF8String path, UTF8String context) {
    checkPath(path.toString(), context.toString(), "write to");
    return path;
  }

  private static void checkPath(String path, String context, String verb) {
    Role role = context.startsWith("R") ? Role.READER : Role.ADMIN;
    requireInside(path, lines(context.substring(1)), role, verb);
  }

  /** list_files and read_files: their path, when the analysing session is a client's. */
  static void checkListing(String path) {
    if (!enabled) {
      return;
    }
    Role role = role(SparkSession.active());
    if (role != Role.PIPELINE) {
      requireInside(path, roots(), role, "list");
    }
  }

  private static void requireInside(String path, List<String> roots, Role role, String verb) {
    if (!inside(path, roots)) {
      throw refusal(
          role,
          "may not "
              + verb
              + " "
              + path
              + ": it is outside the folders this server allows (pixels-sql serve --allow-path)");
    }
  }

  /**
   * Whether {@code path} (a local path, a file: URI, a zip member path or an object-storage URI)
   * is inside one of {@code roots} (canonical, as {@link #canonicalRoots} gives them). Local
   * paths are resolved through their links first: a link inside a root to a file outside it is
   * outside.
   */
  static boolean inside(String path, List<String> roots) {
    String target = outermostArchive(path);
    String canonical = canonical(target);
    if (canonical == null) {
      return false;
    }
    for (String root : roots) {
      if (canonical.equals(root)
          || canonical.startsWith(root.endsWith("/") ? root : root + "/")) {
        return true;
      }
    }
    return false;
  }

  /** The file a zip member path is read from: zip://m::<archive>, the archive, recursively. */
  static String outermostArchive(String path) {
    String target = path;
    while (target.startsWith("zip://") && target.contains("::")) {
      target = target.substring(target.indexOf("::") + 2);
    }
    return target;
  }

  /**
   * A path's canonical text: for a local file, its real path (links resolved, as far as it
   * exists; the rest may not climb with ".."); for an object-storage URI, the URI if it has no
   * "." or ".." segment. Null when it cannot be placed. The same local spellings as the Python
   * readers' (pixels_sql.io.paths.to_local_path): file://, file:, dbfs:/.
   */
  static String canonical(String path) {
    String local = path;
    if (local.startsWith("file://")) {
      local = local.substring("file://".length());
    } else if (local.startsWith("file:")) {
      local = local.substring("file:".length());
    } else if (local.startsWith("dbfs:/")) {
      local = "/dbfs/" + local.substring("dbfs:/".length()).replaceFirst("^/+", "");
    } else if (local.matches("^[A-Za-z][A-Za-z0-9+.-]*://.*")) {
      for (String segment : local.substring(local.indexOf("://") + 3).split("/", -1)) {
        if (segment.equals("..") || segment.equals(".")) {
          return null;
        }
      }
      return local;
    }
    if (local.indexOf('\0') >= 0) {
      return null;
    }
    try {
      Path absolute = Paths.get(local).toAbsolutePath().normalize();
      Path existing = absolute;
      List<Path> rest = new ArrayList<>();
      while (existing != null && !Files.exists(existing, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
        rest.add(0, existing.getFileName());
        existing = existing.getParent();
      }
      if (existing == null) {
        return null;
      }
      if (!rest.isEmpty() && Files.isSymbolicLink(existing)) {
        return null; // a dangling link: where it would point is not known yet
      }
      Path real = Files.exists(existing) ? existing.toRealPath() : null;
      if (real == null) {
        return null;
      }
      for (Path part : rest) {
        real = real.resolve(part);
      }
      return real.toString();
    } catch (IOException | InvalidPathException | SecurityException e) {
      return null;
    }
  }

  private static List<String> canonicalRoots(List<String> given) {
    List<String> roots = new ArrayList<>();
    for (String root : given) {
      String canonical = canonical(root);
      if (canonical != null) {
        roots.add(canonical);
      }
    }
    return List.copyOf(roots);
  }

  /** The allowed roots now: the server's own, and the roots file's current lines. */
  static List<String> roots() {
    Path file = rootsFile;
    if (file != null) {
      try {
        long stamp =
            Files.exists(file) ? Files.getLastModifiedTime(file).toMillis() ^ Files.size(file) : -1;
        if (stamp != rootsFileStamp) {
          List<String> read =
              stamp == -1
                  ? List.of()
                  : Files.readAllLines(file, StandardCharsets.UTF_8);
          fileRoots = canonicalRoots(lines(String.join("\n", read)));
          rootsFileStamp = stamp;
        }
      } catch (IOException e) {
        // Keep the roots read last: a file being rewritten is read again next time.
      }
    }
    List<String> all = new ArrayList<>(fixedRoots);
    all.addAll(fileRoots);
    return all;
  }

  private static List<String> lines(String text) {
    List<String> found = new ArrayList<>();
    if (text == null) {
      return found;
    }
    for (String line : text.split("\n")) {
      String trimmed = line.trim();
      if (!trimmed.isEmpty() && !trimmed.startsWith("#")) {
        found.add(trimmed);
      }
    }
    return found;
  }

  /** The rule the extension injects into every session (a no-op while the guard is off). */
  static final class RuleFactory
      extends AbstractFunction1<SparkSession, scala.Function1<LogicalPlan, BoxedUnit>>
      implements java.io.Serializable {
    private static final long serialVersionUID = 1L;

    @Override
    public scala.Function1<LogicalPlan, BoxedUnit> apply(SparkSession session) {
      return new Rule(session);
    }
  }

  static final class Rule extends AbstractFunction1<LogicalPlan, BoxedUnit>
      implements java.io.Serializable {
    private static final long serialVersionUID = 1L;
    private final transient SparkSession session;

    Rule(SparkSession session) {
      this.session = session;
    }

    @Override
    public BoxedUnit apply(LogicalPlan plan) {
      check(session, plan);
      return BoxedUnit.UNIT;
    }
  }
}
