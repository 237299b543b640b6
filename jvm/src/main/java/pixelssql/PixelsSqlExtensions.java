package pixelssql;

import java.io.Serializable;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import org.apache.spark.sql.DataFrameReader;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.ExpressionInfo;
import org.apache.spark.sql.catalyst.expressions.NamedArgumentExpression;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;

import scala.Tuple3;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * Spark SQL extension adding the {@code read_files} table-valued function, so that the Databricks SQL
 * form {@code SELECT * FROM read_files('/data', format => 'binaryFile', recursiveFileLookup => true)}
 * runs on open-source Spark, and {@code list_files} (see {@link ListFiles}), a listing in which
 * every file has a row.
 *
 * <p>Enable it with {@code spark.sql.extensions=pixelssql.PixelsSqlExtensions} and the jar on the
 * driver class path ({@code spark.jars}). The function resolves to the analyzed plan of
 * {@code spark.read().format(fmt).options(opts).load(path)}, so Spark's own file index lists the
 * files (in parallel for large trees) and column pruning keeps {@code content} unread when a query
 * does not select it.
 */
public final class PixelsSqlExtensions extends AbstractFunction1<SparkSessionExtensions, BoxedUnit>
    implements Serializable {

  private static final long serialVersionUID = 1L;

  static final String FUNCTION_NAME = "read_files";
  static final String DEFAULT_FORMAT = "binaryFile";

  private static final String USAGE =
      "read_files(path [, format => 'binaryFile'] [, schema => 'ddl'] [, <option> => value ...])"
          + " - Reads the files under `path` with a Spark file source. Every named argument other"
          + " than `format` and `schema` is passed to the source as a reader option"
          + " (recursiveFileLookup, pathGlobFilter, modifiedAfter, header, ...).";

  private static final String EXAMPLES =
      "\n    Examples:\n"
          + "      > SELECT path, length FROM read_files('/data/dicom', format => 'binaryFile',"
          + " recursiveFileLookup => true, pathGlobFilter => '*.dcm');\n";

  @Override
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    loadEveryClass();
    // The listing's folder reader loads its library now, from the jar, for the same reason.
    NativeFolders.available();
    inject(extensions, FUNCTION_NAME, ReadFiles.class, USAGE, EXAMPLES, new ReadFiles());
    inject(
        extensions,
        ListFiles.FUNCTION_NAME,
        ListFiles.class,
        ListFiles.USAGE,
        ListFiles.EXAMPLES,
        new ListFiles());
    PythonFunctions.inject(extensions);
    // What clients of pixels-sql serve may do; nothing is checked until the server enables it.
    extensions.injectCheckRule(new ClientGuard.RuleFactory());
    return BoxedUnit.UNIT;
  }

  /**
   * Loads every class of this jar now. The Thrift server closes a JDBC session's Hive class
   * loaders when the session ends, and with them the loader Spark added this jar to: a class
   * first needed after that (e.g. the listing behind list_files) fails with
   * NoClassDefFoundError. Classes loaded before keep working.
   */
  private static void loadEveryClass() {
    ClassLoader loader = PixelsSqlExtensions.class.getClassLoader();
    java.security.CodeSource source = PixelsSqlExtensions.class.getProtectionDomain().getCodeSource();
    if (source == null) {
      return;
    }
    try (java.util.jar.JarFile jar = new java.util.jar.JarFile(new java.io.File(source.getLocation().toURI()))) {
      java.util.Enumeration<java.util.jar.JarEntry> entries = jar.entries();
      while (entries.hasMoreElements()) {
        String name = entries.nextElement().getName();
        if (name.startsWith("pixelssql/") && name.endsWith(".class")) {
          Class.forName(name.substring(0, name.length() - 6).replace('/', '.'), false, loader);
        }
      }
    } catch (java.io.IOException
        | java.net.URISyntaxException
        | IllegalArgumentException
        | ClassNotFoundException e) {
      // Best effort: a jar that is not a local file (e.g. inside another archive) keeps Java's
      // lazy loading, which only the Thrift server's session close can break.
    }
  }

  /** Registers one table-valued function with the text DESCRIBE FUNCTION shows. */
  private static void inject(
      SparkSessionExtensions extensions,
      String name,
      Class<?> implementation,
      String usage,
      String examples,
      scala.Function1<Seq<Expression>, LogicalPlan> builder) {
    ExpressionInfo info =
        new ExpressionInfo(
            implementation.getName(), null, name, usage, "", examples, "", "", "", "", "java_udf");
    extensions.injectTableFunction(new Tuple3<>(FunctionIdentifier.apply(name), info, builder));
  }

  /** Builds the logical plan of one {@code read_files(...)} call from its argument expressions. */
  public static final class ReadFiles extends AbstractFunction1<Seq<Expression>, LogicalPlan>
      implements Serializable {

    private static final long serialVersionUID = 1L;

    @Override
    public LogicalPlan apply(Seq<Expression> arguments) {
      String path = null;
      String format = DEFAULT_FORMAT;
      String schema = null;
      Map<String, String> options = new LinkedHashMap<>();

      List<Expression> args = CollectionConverters.asJava(arguments);
      for (Expression argument : args) {
        if (argument instanceof NamedArgumentExpression) {
          NamedArgumentExpression named = (NamedArgumentExpression) argument;
          String key = named.key();
          String value = literal(key, named.value());
          String lower = key.toLowerCase(Locale.ROOT);
          if (lower.equals("format")) {
            format = value;
          } else if (lower.equals("schema")) {
            schema = value;
          } else if (lower.equals("path")) {
            path = value;
          } else {
            options.put(key, value);
          }
        } else if (path == null) {
          path = literal("path", argument);
        } else {
          throw new IllegalArgumentException(
              FUNCTION_NAME
                  + " takes one positional argument (the path); pass options as named arguments,"
                  + " e.g. recursiveFileLookup => true");
        }
      }
      if (path == null || path.isEmpty()) {
        throw new IllegalArgumentException(
            FUNCTION_NAME + " needs a path: read_files('/data/dicom', format => 'binaryFile')");
      }

      ClientGuard.checkListing(path);
      SparkSession session = SparkSession.active();
      org.apache.spark.sql.classic.SparkSession classic =
          (org.apache.spark.sql.classic.SparkSession) session;
      if (!FileListing.hadoopLists(path, classic.sessionState().newHadoopConf())) {
        return objectStorePlan(classic, path, format, schema, options);
      }
      LogicalPlan listed = localBinaryFiles(classic, path, format, schema, options);
      if (listed != null) {
        return listed;
      }
      DataFrameReader reader = session.read().format(format).options(options);
      if (schema != null) {
        reader = reader.schema(schema);
      }
      org.apache.spark.sql.classic.Dataset<?> frame =
          (org.apache.spark.sql.classic.Dataset<?>) reader.load(path);
      return frame.queryExecution().analyzed();
    }

    /**
     * {@code read_files(path, recursiveFileLookup => true [, pathGlobFilter => g])} of a local
     * folder in the binaryFile format: the binaryFile source's columns and files, walked by
     * {@link LocalWalk} when the query runs, in parallel tasks, instead of Spark's file index
     * (a Hadoop status call per file, all of them held by the driver: ~50x slower than a walk
     * of the disk). Null where Spark's source is needed: other formats, a schema, other
     * options, partition discovery (no recursiveFileLookup), a path that is a file.
     */
    static LogicalPlan localBinaryFiles(
        org.apache.spark.sql.classic.SparkSession session,
        String path,
        String format,
        String schema,
        Map<String, String> options) {
      String scheme = FileListing.scheme(path);
      if (!format.equalsIgnoreCase(DEFAULT_FORMAT)
          || schema != null
          || (scheme != null && !scheme.equalsIgnoreCase("file"))) {
        return null;
      }
      ListingOptions listing = new ListingOptions(options);
      if (listing.other != null || !listing.recursive) {
        return null;
      }
      String glob = listing.glob;
      java.nio.file.Path root;
      try {
        root = FileListing.localPath(path, scheme);
        if (!java.nio.file.Files.isDirectory(root)) {
          return null;
        }
        FileListing.matcher(glob);
        long maxLength =
            Long.parseLong(
                session.conf().get("spark.sql.sources.binaryFile.maxLength", "2147483647"));
        ListingTable table =
            ListingTable.local(
                FUNCTION_NAME,
                root,
                false,
                glob,
                true,
                LocalWalk.Naming.SPARK,
                Math.min(maxLength, Integer.MAX_VALUE - 8L),
                session.sparkContext().defaultParallelism(),
                NativeFolders.wanted(session));
        return org.apache.spark.sql.execution.datasources.v2.DataSourceV2Relation.create(
            table, scala.Option.empty(), scala.Option.empty());
      } catch (IllegalArgumentException | java.io.IOException e) {
        return null; // Spark's own source gives its own error
      }
    }

    /**
     * {@code read_files} of object storage that no Hadoop file system of this application reads
     * (s3://, gs://, abfs:// on the pyspark wheel): the binaryFile source's columns from
     * list_files (listed through fsspec) and file_content, which reads an object only when the
     * query selects {@code content}. The path reaches the query as a parameter, never as text.
     */
    static LogicalPlan objectStorePlan(
        org.apache.spark.sql.classic.SparkSession session,
        String path,
        String format,
        String schema,
        Map<String, String> options) {
      if (!format.equalsIgnoreCase(DEFAULT_FORMAT) || schema != null) {
        throw new IllegalArgumentException(
            FUNCTION_NAME
                + ": "
                + path
                + " is read through pixels-sql's object-storage support, which gives the"
                + " binaryFile format only; put the Hadoop file system's jars (e.g. hadoop-aws"
                + " for s3a://) on the class path to read other formats");
      }
      ListingOptions listing = new ListingOptions(options);
      if (listing.other != null) {
        throw new IllegalArgumentException(
            FUNCTION_NAME
                + " of object storage takes the options pathGlobFilter and"
                + " recursiveFileLookup, not "
                + listing.other
                + " (filter the listing with WHERE instead)");
      }
      Map<String, Object> parameters = new LinkedHashMap<>();
      parameters.put("path", path);
      parameters.put("glob", listing.glob);
      parameters.put("recursive", listing.recursive);
      org.apache.spark.sql.classic.Dataset<?> frame =
          session.sql(
              "SELECT path, modificationTime, length, file_content(path) AS content"
                  + " FROM list_files(:path, glob => :glob, recursive => :recursive)"
                  + " WHERE reason IS NULL",
              parameters);
      return frame.queryExecution().analyzed();
    }

    /**
     * The binaryFile options that pixels-sql's own listings take: pathGlobFilter (default *) and
     * recursiveFileLookup (default false, as Spark's); {@code other} names the first other
     * option given (null when none).
     */
    static final class ListingOptions {
      String glob = "*";
      boolean recursive = false;
      String other;

      ListingOptions(Map<String, String> options) {
        for (Map.Entry<String, String> option : options.entrySet()) {
          String key = option.getKey().toLowerCase(Locale.ROOT);
          if (key.equals("pathglobfilter")) {
            glob = option.getValue();
          } else if (key.equals("recursivefilelookup")) {
            recursive = Boolean.parseBoolean(option.getValue().trim());
          } else if (other == null) {
            other = option.getKey();
          }
        }
      }
    }

    /** Evaluates a constant argument to the string form that DataFrameReader options take. */
    private static String literal(String name, Expression expression) {
      if (!expression.foldable()) {
        throw new IllegalArgumentException(
            FUNCTION_NAME + " argument '" + name + "' must be a constant, got: " + expression.sql());
      }
      Object value = expression.eval(null);
      if (value == null) {
        throw new IllegalArgumentException(
            FUNCTION_NAME + " argument '" + name + "' must not be NULL");
      }
      return value.toString();
    }
  }
}
